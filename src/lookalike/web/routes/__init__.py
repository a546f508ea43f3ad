"""The app's routers, one per concern; :func:`lookalike.web.app.create_app` includes them all."""
