"""A real RTSP server for tests: GStreamer's RTSP server serving H.264 .mp4 files.

Run with Debian's /usr/bin/python3 (where `gi` lives):
    rtsp_server.py PORT VIDEO.mp4 [--mount /cam2=OTHER.mp4 ...] [--user NAME --password SECRET]
Serves VIDEO at rtsp://127.0.0.1:PORT/cam1 (and each --mount at its path); each
client gets the file from its start, at its real frame rate, and the stream
ends with the file. Prints "ready" once listening.
"""

import argparse
import sys

import gi

gi.require_version("Gst", "1.0")
gi.require_version("GstRtspServer", "1.0")
from gi.repository import GLib, Gst, GstRtspServer  # noqa: E402


def make_factory(video, user):
    factory = GstRtspServer.RTSPMediaFactory()
    location = video.replace("\\", "\\\\").replace('"', '\\"')
    factory.set_launch(
        f'( filesrc location="{location}" ! qtdemux ! h264parse ! rtph264pay name=pay0 pt=96 )'
    )
    if user:
        permissions = GstRtspServer.RTSPPermissions()
        permissions.add_role(user)
        permissions.add_permission_for_role(user, "media.factory.access", True)
        permissions.add_permission_for_role(user, "media.factory.construct", True)
        factory.set_permissions(permissions)
    return factory


def add_auth(server, user, password):
    auth = GstRtspServer.RTSPAuth()
    token = GstRtspServer.RTSPToken()
    token.set_string("media.factory.role", user)
    auth.add_basic(GstRtspServer.RTSPAuth.make_basic(user, password), token)
    server.set_auth(auth)


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("port")
    parser.add_argument("video")
    parser.add_argument("--mount", action="append", default=[], help="/path=VIDEO.mp4")
    parser.add_argument("--user")
    parser.add_argument("--password", default="")
    args = parser.parse_args()
    Gst.init(None)
    server = GstRtspServer.RTSPServer()
    server.set_address("127.0.0.1")
    server.set_service(args.port)
    if args.user:
        add_auth(server, args.user, args.password)
    mounts = server.get_mount_points()
    for spec in [f"/cam1={args.video}", *args.mount]:
        path, video = spec.split("=", 1)
        mounts.add_factory(path, make_factory(video, args.user))
    if server.attach(None) == 0:
        sys.exit(f"cannot listen on 127.0.0.1:{args.port}")
    print("ready", flush=True)
    GLib.MainLoop().run()


if __name__ == "__main__":
    main()
