"""The question-answering library: SQuAD records, features, models, batching, inference,
post-processing, answers, predictions, training and serving.

It knows nothing of DVC paths, argparse or MLflow: the stages and commands in pipeline/
call it with explicit paths and typed settings. It imports only pipeline.runtime.
"""
