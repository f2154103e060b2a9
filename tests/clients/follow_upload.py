"""Follows one upload's event stream with sseclient-py, a third-party SSE
client: prints each event as a JSON line (event, id, data) until the server
ends the stream.

Usage: follow_upload.py URL API_KEY
"""

import json
import sys

import requests
import sseclient


def main():
    url, api_key = sys.argv[1], sys.argv[2]
    response = requests.get(
        url,
        stream=True,
        headers={"Authorization": f"Bearer {api_key}", "Accept": "text/event-stream"},
        timeout=(5, 60),
    )
    response.raise_for_status()
    for event in sseclient.SSEClient(response).events():
        line = {"event": event.event, "id": event.id, "data": json.loads(event.data)}
        print(json.dumps(line), flush=True)


if __name__ == "__main__":
    main()
