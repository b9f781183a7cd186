"""The dashboard's static files, served at /dashboard/."""
