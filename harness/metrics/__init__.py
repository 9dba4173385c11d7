"""Metrics: per-question scorers named for the definition they implement, and their aggregation."""

from harness.metrics.base import Metric, MetricContext, MetricFactory, TextMetric

__all__ = ["Metric", "MetricContext", "MetricFactory", "TextMetric"]
