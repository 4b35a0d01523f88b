"""The run report: `<run_dir>/report.html` (self-contained, plots as inline SVG) and `report.json`."""

from pipeline.report.build import REPORT_HTML, REPORT_JSON, build_report

__all__ = ["REPORT_HTML", "REPORT_JSON", "build_report"]
