"""Data quality: ``kpilot audit`` checks the event data behind the numbers (rejections, duplicates,
anonymous traffic, out-of-range timestamps, property schema drift)."""

from kpilot.quality.audit import AuditOptions, AuditReport, DayStats, run_audit
from kpilot.quality.drift import DriftChange, schema_drift

__all__ = ["AuditOptions", "AuditReport", "DayStats", "DriftChange", "run_audit", "schema_drift"]
