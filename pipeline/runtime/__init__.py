"""Runtime helpers below the QA library: config, errors, files, tracking, composition, paths.

Nothing here knows about question answering; the library (pipeline.qa) and the entry
points (the stages and commands in pipeline/) import from here, never the other way.
"""
