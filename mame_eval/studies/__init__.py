"""Reader studies: design, storage, the Streamlit app and the statistical analysis."""
