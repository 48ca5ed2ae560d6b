// Reads every partition of a topic from the beginning to its end with a kafkajs consumer
// (kafkajs has no assign(): the consumer joins a throwaway group, never commits) and prints
// the records.
//
// input: {brokers, topic, groupId?, readUncommitted?, ends?: {partition: offset},
//         counts?: {partition: n}, timeoutMs?}
//   a partition is done at offset `ends[p]` - 1, or after `counts[p]` records (for
//   transactional topics, whose end is a control record kafkajs never hands over); without
//   either, each partition is read up to the high watermark that ListOffsets gave at the start
// output: {records: [{partition, offset, key, value, headers, timestamp}, ...]} in the order
//   kafkajs delivered them (per partition: offset order); key/value base64 or null
'use strict'

const { kafka, b64, emit, headersJson, main } = require('./lib')

main(async input => {
  const client = kafka(input, 'kafkajs-consume')
  let ends = input.ends
  const counts = input.counts
  if (counts) {
    ends = null
  } else if (!ends) {
    const admin = client.admin()
    await admin.connect()
    ends = {}
    for (const p of await admin.fetchTopicOffsets(input.topic)) ends[p.partition] = Number(p.high)
    await admin.disconnect()
  }
  const pending = new Set(
    Object.entries(counts || ends)
      .filter(([, end]) => end > 0)
      .map(([p]) => Number(p))
  )
  const records = []
  const seen = {}
  const consumer = client.consumer({
    groupId: input.groupId || `kafkajs-consume-${process.pid}-${Date.now()}`,
    readUncommitted: input.readUncommitted ?? false,
    maxWaitTimeInMs: 100,
    sessionTimeout: 10000,
    heartbeatInterval: 1000,
  })
  let finish
  const finished = new Promise(resolve => (finish = resolve))
  if (pending.size === 0) finish()
  await consumer.connect()
  await consumer.subscribe({ topic: input.topic, fromBeginning: true })
  await consumer.run({
    autoCommit: false,
    eachBatch: async ({ batch }) => {
      for (const m of batch.messages) {
        records.push({
          partition: batch.partition,
          offset: Number(m.offset),
          key: b64(m.key),
          value: b64(m.value),
          headers: headersJson(m.headers),
          timestamp: Number(m.timestamp),
        })
        seen[batch.partition] = (seen[batch.partition] || 0) + 1
        if (counts ? seen[batch.partition] >= counts[batch.partition]
                   : Number(m.offset) + 1 >= ends[batch.partition]) pending.delete(batch.partition)
      }
      if (pending.size === 0) finish()
    },
  })
  const timeout = input.timeoutMs ?? 30000
  const timer = setTimeout(() => finish('timeout'), timeout)
  const why = await finished
  clearTimeout(timer)
  await consumer.disconnect()
  emit({ records, ...(why === 'timeout' ? { timeout: [...pending] } : {}) })
})
