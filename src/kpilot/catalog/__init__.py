"""The metric catalog: declarative metric definitions (YAML, shipped in ``catalog/metrics``).

Each metric names a query template in kpilot's query language and how to read its headline number from
the result. ``load_catalog()`` validates every file and reports every problem at once.
"""

from kpilot.catalog.evaluate import MetricValue, evaluate_metric
from kpilot.catalog.formatting import format_value
from kpilot.catalog.loader import Catalog, CatalogError, Problem, load_catalog, load_catalog_from
from kpilot.catalog.models import CATEGORIES, Metric, Parameter, ValueSpec

__all__ = [
    "CATEGORIES",
    "Catalog",
    "CatalogError",
    "Metric",
    "MetricValue",
    "Parameter",
    "Problem",
    "ValueSpec",
    "evaluate_metric",
    "format_value",
    "load_catalog",
    "load_catalog_from",
]
