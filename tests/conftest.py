"""The shared fixtures live in plugin modules (psycopg's way): the database, and the service
with its tokens and stubs. Tests are grouped by domain below this folder."""

pytest_plugins = ["tests.plugins.database", "tests.plugins.service", "tests.plugins.browser",
                  "tests.plugins.receiver", "tests.plugins.smtp"]
