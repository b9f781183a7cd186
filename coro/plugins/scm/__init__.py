"""Source-control plugins: `github`, `bitbucket`, `local`."""
