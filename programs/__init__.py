"""programs"""

from . import layer_space as _layer_space  # noqa: F401  (registers the layer family)
