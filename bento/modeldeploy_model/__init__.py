"""The model side of modeldeploy: from a data set to a served, explained, gated Bento.

Why a separate package: the operator image must stay small, so everything that needs the ML
stack (scikit-learn, TensorFlow, ONNX, SHAP, BentoML) lives here and is installed with the
``ml`` extra. The operator's CLI picks up our subcommands from :mod:`modeldeploy_model.cli`
only when this package imports.

Stages (each a function with typed inputs and a recorded JSON result, see
:mod:`modeldeploy_model.pipeline`): data -> train -> evaluate/gate -> export (ONNX, int8) ->
explain (SHAP) -> package (BentoML model store + ``bentoml build``). The served side is one
BentoML service class, :mod:`modeldeploy_model.service`, that serves any artifact the pipeline
writes; :mod:`modeldeploy_model.testing` starts it in a subprocess for tests.
"""

__all__ = ["__version__"]

__version__ = "0.1.0"
