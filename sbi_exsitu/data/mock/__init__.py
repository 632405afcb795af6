"""Mock galaxy-formation models: the embedded, download-free galaxy source.

Example:
    >>> from sbi_exsitu.data.mock import available_models, get_model
    >>> "tng-like" in available_models()
    True
    >>> particles, info = get_model("eagle-like").draw(1, log_mstar=10.2)
    >>> info["model"]
    'eagle-like'
"""

from sbi_exsitu.data.mock.base import (
    GRAVITY_FIELDS,
    POPULATION_FIELDS,
    Z_SUN,
    FormationModel,
    GalaxyStructure,
    ModelError,
)
from sbi_exsitu.data.mock.registry import available_models, get_model, register_model

__all__ = [
    "FormationModel",
    "GalaxyStructure",
    "ModelError",
    "GRAVITY_FIELDS",
    "POPULATION_FIELDS",
    "Z_SUN",
    "available_models",
    "get_model",
    "register_model",
]
