"""What tests share, by concern (test modules import these, never each other):

services   a private Redis, the real CLI, a sink in a thread, stream feeding, waiting
mosquitto  a private Mosquitto broker (TLS, passwords) and an MQTT subscriber
receivers  a webhook endpoint and its signature, Redis pub/sub channels
builders   settings, wire messages, numbered frames, defect runs of a truth
rows       parts rows as the sink writes them, detection counts, stored boxes
api        the API and dashboard tests' settings, models, images, servers, lines
browser    headless Chromium screenshots of the report's plots

PostgreSQL and Redis fixtures are in tests/conftest.py, the RTSP server in
tests/conftest_rtsp.py (a pytest plugin) with its GStreamer script tests/rtsp_server.py.
"""
