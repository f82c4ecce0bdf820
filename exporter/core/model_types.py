"""AutoML's image classification model types (``imageClassificationModelMetadata.modelType``)."""

MOBILE_MODEL_TYPES = ("mobile-low-latency-1", "mobile-versatile-1", "mobile-high-accuracy-1")
# AutoML's server-hosted model type: stored and served, never exported.
CLOUD_MODEL_TYPE = "cloud"
MODEL_TYPES = MOBILE_MODEL_TYPES + (CLOUD_MODEL_TYPE,)
