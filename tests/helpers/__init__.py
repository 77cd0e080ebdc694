"""What the tests build and run, shared between test modules: sample data and loopback servers
(sample_data), the stage scripts on a tiny random set (stages), a tiny DVC pipeline repo
(tiny_pipeline), a real MLflow server (mlflow_server) and headless Chromium (ui)."""
