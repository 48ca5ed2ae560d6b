// Shared by the kafkajs driver scripts of tests/clients/test_kafkajs.py: the Kafka client
// (logs to stderr, stdout is reserved for the JSON result), the compression codecs, and the
// JSON conventions: bytes (keys, values, header values) travel as base64 strings, null as null.
'use strict'

const fs = require('fs')
const { Kafka, CompressionTypes, CompressionCodecs, logLevel } = require('kafkajs')

// snappy: kafkajs-snappy (pure JS over snappyjs)
CompressionCodecs[CompressionTypes.Snappy] = require('kafkajs-snappy')

// lz4: the LZ4 frame format through lz4js (pure JS). kafkajs-lz4 wraps the native `lz4`
// package, whose node-gyp build needs the node headers and a compiler; this codec needs neither.
const lz4 = require('lz4js')
CompressionCodecs[CompressionTypes.LZ4] = () => ({
  async compress(encoder) {
    return Buffer.from(lz4.compress(encoder.buffer))
  },
  async decompress(buffer) {
    return Buffer.from(lz4.decompress(buffer))
  },
})

// zstd: libzstd compiled to WebAssembly (@bokuweb/zstd-wasm). @kafkajs/zstd wraps cppzst, a
// node-gyp addon. ZSTD_decompress needs an output buffer: the frame's content size when the
// producer wrote one (and there is one frame), else grown until it fits.
const zstd = require('@bokuweb/zstd-wasm')
let zstdReady = null
const zstdInit = () => (zstdReady = zstdReady || zstd.init())
CompressionCodecs[CompressionTypes.ZSTD] = () => ({
  async compress(encoder) {
    await zstdInit()
    return Buffer.from(zstd.compress(encoder.buffer, 3))
  },
  async decompress(buffer) {
    await zstdInit()
    let size = Math.max(1 << 20, buffer.length * 32)
    for (;;) {
      try {
        return Buffer.from(zstd.decompress(buffer, { defaultHeapSize: size }))
      } catch (e) {
        if (size >= 1 << 28) throw e
        size *= 4
      }
    }
  },
})

const COMPRESSION = {
  none: CompressionTypes.None,
  gzip: CompressionTypes.GZIP,
  snappy: CompressionTypes.Snappy,
  lz4: CompressionTypes.LZ4,
  zstd: CompressionTypes.ZSTD,
}

// kafkajs' own levels; KAFKAJS_LOG_LEVEL=debug in the environment logs every request
const stderrLog = () => ({ namespace, label, log }) => {
  const { message, timestamp, logger, ...extra } = log
  process.stderr.write(`${timestamp} ${label} [${namespace}] ${message} ${JSON.stringify(extra)}\n`)
}

function kafka(input, clientId) {
  return new Kafka({
    clientId: input.clientId || clientId,
    brokers: input.brokers,
    logLevel: logLevel.INFO,
    logCreator: stderrLog,
    connectionTimeout: 5000,
    requestTimeout: 15000,
    // fail fast: a test asserts on the first answer, it does not wait for retries to give up
    retry: { retries: input.retries ?? 3, initialRetryTime: 100, maxRetryTime: 1000 },
  })
}

/** The JSON input: argv[2] if given, else all of stdin. */
function input() {
  const text = process.argv[2] !== undefined ? process.argv[2] : fs.readFileSync(0, 'utf8')
  return JSON.parse(text)
}

const b64 = buf => (buf === null || buf === undefined ? null : Buffer.from(buf).toString('base64'))
const unb64 = s => (s === null || s === undefined ? null : Buffer.from(s, 'base64'))

/** Buffers (even nested, after their toJSON) become base64 strings. */
function replacer(key, value) {
  if (value && value.type === 'Buffer' && Array.isArray(value.data)) {
    return Buffer.from(value.data).toString('base64')
  }
  return value
}

function emit(obj) {
  process.stdout.write(JSON.stringify(obj, replacer) + '\n')
}

/** A kafkajs error as plain JSON (name, type, code, message, retriable). */
function errorJson(e) {
  return {
    name: e.name,
    type: e.type ?? null,
    code: e.code ?? null,
    message: e.message,
    retriable: e.retriable ?? null,
  }
}

/** Headers as [[name, base64 value], ...] in kafkajs' order (repeated names are arrays). */
function headersJson(headers) {
  const out = []
  for (const [name, v] of Object.entries(headers || {})) {
    for (const one of Array.isArray(v) ? v : [v]) out.push([name, b64(one)])
  }
  return out
}

/** [[name, base64 value], ...] to kafkajs' header object (repeated names become arrays). */
function headersObj(list) {
  const out = {}
  for (const [name, v] of list || []) {
    const buf = unb64(v)
    if (name in out) out[name] = [].concat(out[name], buf)
    else out[name] = buf
  }
  return out
}

/** Exits once stdout is flushed: writes to a pipe are asynchronous, and process.exit() would
 * cut a result longer than the pipe's buffer. */
function exit(code) {
  process.stdout.write('', () => process.exit(code))
}

function main(fn) {
  fn(input()).then(
    () => exit(0),
    e => {
      process.stderr.write(`${e && e.stack ? e.stack : e}\n`)
      emit({ fatal: errorJson(e) })
      exit(1)
    }
  )
}

module.exports = {
  COMPRESSION,
  kafka,
  b64,
  unb64,
  emit,
  errorJson,
  headersJson,
  headersObj,
  main,
}
