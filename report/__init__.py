"""A run's report (accounting, deliveries, feedback) read from the run layout, as text, HTML, or a row in the run catalog."""
