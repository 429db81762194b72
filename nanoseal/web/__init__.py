"""
The web UI of nanoseal: `nanoseal serve --checkpoint DIR [--runs-dir DIR] [--adapters-dir DIR] [--port N]`.

    serve.py    the CLI command (imports fastapi/uvicorn only when it runs: the `web` extra)
    app.py      the FastAPI app: nanochat-compatible /chat/completions (SSE), ARC tasks and predictions, runs
    hub.py      the models: base loaded once, adapters hot-swapped, round policies cached; the generation queue
    data.py     ARC tasks and run directories, read with the project's own loaders
    static/     the page: index.html + app.js + app.css, plain DOM code, no build step
"""
