"""The detector as MLflow's models from code load it: detector.log_detector logs this file as the
model's code, and loading the model runs it, so that the logged model holds no pickle (it needs
the faceswap_ela package installed, as serving with ``--env-manager local`` has it)."""

from mlflow.models import set_model

from faceswap_ela.detector import Detector

set_model(Detector())
