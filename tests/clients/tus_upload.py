"""Uploads a file with tuspy, a third-party tus client: creates the upload
(or resumes the one at --url), sends it in chunks (up to --stop-at bytes,
if given), then prints the upload's URL, and "done" once every byte is in.
With --checksum, each chunk carries its sha1 (Upload-Checksum).

Usage: tus_upload.py ENDPOINT API_KEY FILE FOLDER CHUNK [--stop-at N] [--url URL] [--checksum]
"""

import argparse

from tusclient import client


def main():
    parser = argparse.ArgumentParser()
    for name in ["endpoint", "api_key", "file", "folder"]:
        parser.add_argument(name)
    parser.add_argument("chunk", type=int)
    parser.add_argument("--stop-at", type=int)
    parser.add_argument("--url")
    parser.add_argument("--checksum", action="store_true")
    args = parser.parse_args()
    tus = client.TusClient(args.endpoint, headers={"Authorization": f"Bearer {args.api_key}"})
    uploader = tus.uploader(
        args.file,
        url=args.url,
        chunk_size=args.chunk,
        metadata={"filename": "tus.mp4", "folder": args.folder},
        retries=3,
        retry_delay=1,
        upload_checksum=args.checksum,
    )
    if args.stop_at is not None:
        uploader.upload(stop_at=args.stop_at)
        print(uploader.url, flush=True)
    else:
        uploader.upload()
        print(uploader.url, flush=True)
        print("done", flush=True)


if __name__ == "__main__":
    main()
