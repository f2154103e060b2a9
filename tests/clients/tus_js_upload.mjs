// Uploads a file with tus-js-client (the tus project's JavaScript client, the
// one browsers and Uppy use), in its Node build: creates the upload (or, with
// --url-storage, resumes the one a previous run stored for this file), sends
// it, then prints the upload's URL on the first line and "done" on the second
// once every byte is in (or "stopped" after --stop-after). On an error it
// prints the error to stderr and exits 1.
//
// Usage: node tus_js_upload.mjs ENDPOINT API_KEY FILE FOLDER [OPTIONS]
//
//   ENDPOINT   the tus creation URL, e.g. http://127.0.0.1:8080/api/client/v1/tus
//   API_KEY    sent as `Authorization: Bearer API_KEY` on every request
//   FILE       the file to upload; its base name is the `filename` metadata
//   FOLDER     the `folder` metadata
//
//   --chunk-size N            PATCH bodies of at most N bytes (default: the
//                             whole file in one request)
//   --parallel N              N partial uploads at once, then a final one that
//                             concatenates them (the concatenation extension);
//                             the partial uploads carry no metadata
//   --url-storage PATH        keep the upload's URL in the JSON file PATH
//                             (FileUrlStorage) and resume a previous upload of
//                             the same file found there
//   --stop-after BYTES        abort once at least BYTES are reported sent;
//                             prints the URL (empty for --parallel, whose URL
//                             exists only at the end) and "stopped", exits 0
//   --upload-during-creation  send the first chunk in the creating POST
//                             (creation-with-upload)
//   --defer-length            create without Upload-Length, which goes with
//                             the last PATCH (creation-defer-length); with
//                             tus-js-client's file source the last PATCH is
//                             known only when one chunk holds the whole file,
//                             so leave --chunk-size unset
//
// Retries are quick (0, 200, 500 and 1000 ms), for tests.

import { createReadStream } from 'node:fs'
import { basename } from 'node:path'
import { parseArgs } from 'node:util'

import { FileUrlStorage, Upload } from 'tus-js-client'

function fail(error) {
  process.stderr.write(`tus-js-client: ${error}\n`)
  process.exit(1)
}

function finish(url, last) {
  process.stdout.write(`${url ?? ''}\n${last}\n`, () => process.exit(0))
}

function count(name, value) {
  if (value === undefined) return undefined
  const n = Number(value)
  if (!Number.isSafeInteger(n) || n < 0) fail(`--${name} wants a whole number, not ${value}`)
  return n
}

let parsed
try {
  parsed = parseArgs({
    allowPositionals: true,
    options: {
      'chunk-size': { type: 'string' },
      parallel: { type: 'string' },
      'url-storage': { type: 'string' },
      'stop-after': { type: 'string' },
      'upload-during-creation': { type: 'boolean' },
      'defer-length': { type: 'boolean' },
    },
  })
} catch (error) {
  fail(error.message)
}
const { values, positionals } = parsed
if (positionals.length !== 4) {
  fail('usage: tus_js_upload.mjs ENDPOINT API_KEY FILE FOLDER [OPTIONS]')
}
const [endpoint, apiKey, file, folder] = positionals
const chunkSize = count('chunk-size', values['chunk-size'])
const parallel = count('parallel', values.parallel)
const stopAfter = count('stop-after', values['stop-after'])
const urlStorage = values['url-storage']

const options = {
  endpoint,
  headers: { Authorization: `Bearer ${apiKey}` },
  metadata: { filename: basename(file), folder },
  metadataForPartialUploads: {},
  retryDelays: [0, 200, 500, 1000],
  uploadDataDuringCreation: values['upload-during-creation'] ?? false,
  uploadLengthDeferred: values['defer-length'] ?? false,
  onError: (error) => fail(error),
  onSuccess: () => finish(upload.url, 'done'),
}
if (chunkSize !== undefined) options.chunkSize = chunkSize
if (parallel !== undefined) options.parallelUploads = parallel
// The entry stays once the upload is done (tus-js-client's default): a run
// again finds the upload complete and ends at once with the same URL (but
// for --parallel, whose partial uploads the server frees once they are
// concatenated: that makes a new upload).
if (urlStorage !== undefined) options.urlStorage = new FileUrlStorage(urlStorage)
if (stopAfter !== undefined) {
  let stopping = false
  options.onProgress = (bytesSent) => {
    if (stopping || bytesSent < stopAfter) return
    stopping = true
    upload.abort().then(
      () => finish(upload.url, 'stopped'),
      (error) => fail(error),
    )
  }
}

const upload = new Upload(createReadStream(file), options)
try {
  if (urlStorage !== undefined) {
    const previous = await upload.findPreviousUploads()
    if (previous.length > 0) upload.resumeFromPreviousUpload(previous[0])
  }
  upload.start()
} catch (error) {
  fail(error)
}
