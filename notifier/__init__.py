"""notifier: consumes job events and tells users by email (SMTP) or signed webhook."""
