"""``lit_ssl.theory``: the public name of ``lit_ssl.diagnosis.theory`` (see there)."""

from lit_ssl.diagnosis.theory import *  # noqa: F403
from lit_ssl.diagnosis.theory import __all__  # noqa: F401
