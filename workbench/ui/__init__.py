"""The Streamlit app's pages, one module each with ``TITLE``, ``ICON``, ``URL`` and ``render()``.

Pages hold no science: they gather input, call the library, and render its result objects.
"""

from . import audit, backdoors, certifiers, data_model, diffusion, label_audit, saliency

PAGES = [data_model, saliency, backdoors, certifiers, label_audit, audit, diffusion]
