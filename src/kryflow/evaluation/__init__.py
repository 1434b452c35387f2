"""kryflow.evaluation"""
