"""The export service: AutoML v1beta1's REST surface over a store and supervised workers.

Nothing here imports TensorFlow: the API process validates requests and models (the SavedModel's
signatures are read from its protobuf) and leaves every conversion to the worker processes.
"""
