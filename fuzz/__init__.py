"""Coverage-guided fuzzing of every wire parser (atheris); see docs/security.md."""
