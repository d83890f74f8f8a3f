"""Developer tools around the pipeline: offline plot pages and the run report."""
