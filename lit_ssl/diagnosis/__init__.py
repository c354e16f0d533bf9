"""Which SSL family suits a dataset: the paper's closed forms and the ``diagnose`` estimate.

``theory.py`` (closed forms and alignment thresholds, numpy in/out; public as
``lit_ssl.theory``), ``linear_model.py`` (moments of augmented views for the linear model),
``estimate.py`` (``diagnose``: measure a dataset and apply the theory), ``report.py`` (the
decision and its Markdown/JSON report), ``sensitivity.py`` (``defect_sensitivity``: do pasted
thin defects move a trained backbone's patch features more than a random backbone's?). The
command line is ``lit_ssl.cli.diagnose``.
"""

from lit_ssl.diagnosis.estimate import diagnose
from lit_ssl.diagnosis.report import DiagnosisReport
from lit_ssl.diagnosis.sensitivity import SensitivityReport, defect_sensitivity

__all__ = ["DiagnosisReport", "SensitivityReport", "defect_sensitivity", "diagnose"]
