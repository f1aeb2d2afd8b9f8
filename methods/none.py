"""``none``: no mitigation, the baseline every method is measured against."""

from memorybench.api.method import Method
from memorybench.api.method import register_method


@register_method()
class NoMitigation(Method):
    name = "none"
    kind = "inference"
    description = "No mitigation: the baseline that every method is compared with."
