"""HTML reports with pictures (self-contained: figures are embedded PNGs) and the text
summaries printed at the end of a run.

The workflow hands each report the results it just computed (:mod:`.results`); a report
never looks for files in the output folder.
"""

from bids_app.report.capture import collect_warnings
from bids_app.report.console import (
    print_coupled_atoms,
    print_coupled_networks,
    print_models_table,
)
from bids_app.report.group import write_group_report
from bids_app.report.methods import citation_text, software_versions
from bids_app.report.results import GroupResult, RunCheck, SubjectResult
from bids_app.report.subject import write_subject_report

__all__ = ["GroupResult", "RunCheck", "SubjectResult", "citation_text", "collect_warnings",
           "print_coupled_atoms", "print_coupled_networks", "print_models_table",
           "software_versions",
           "write_group_report", "write_subject_report"]
