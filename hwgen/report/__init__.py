"""The build report: the terminal summary (Markdown) and the self-contained report.html with its plots."""
