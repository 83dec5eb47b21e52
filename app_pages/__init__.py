"""Page renderers of the Streamlit app (``app.py`` routes to them); presentation only."""
