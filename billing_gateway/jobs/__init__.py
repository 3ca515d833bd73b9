"""The background worker: money events' deliveries and auto top-ups, beside the web
service (`billing-gateway worker`)."""
