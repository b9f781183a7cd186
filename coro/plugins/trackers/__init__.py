"""Issue-tracker plugins: `jira`, `github-issues`."""
