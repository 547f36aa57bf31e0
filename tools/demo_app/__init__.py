"""The demo application built on the live runtime (``avparse demo``).

- ``app``: DemoConfig and ``run``: sources, Runtime, publisher, recorder and window wired together;
- ``state``: OverlayState, what the picture shows, collected from the runtime's threads;
- ``drawing``: Overlay, the picture drawn from a View; ``paint``: its text and box primitives;
- ``window``: the OpenCV window and the recording's frame pump;
- ``recorder``: the annotated mp4 (ffmpeg) and the JSON-lines event file;
- ``scenes``: ChainedScene, an endless generated scene.
"""
