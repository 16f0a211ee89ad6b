"""Using the models: fitting, reports, checks, figures and the varcomp command line."""
