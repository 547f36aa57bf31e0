"""avparse.stream: the live runtime (sources, snippet assembly, batched
inference, the onset/offset tracker, publishing and the subscriber client).

Imports only avparse.core. cv2, sounddevice, zmq and torch_tensorrt are
imported inside the adapters that need them.
"""
