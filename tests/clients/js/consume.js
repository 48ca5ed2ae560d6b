// Reads every partition of a topic from the beginning to its end with a kafkajs consumer
// (kafkajs has no assign(): the consumer joins a throwaway group, never commits) and prints
// the records.
//
// input: {brokers, topic, groupId?, readUncommitted?, ends?: {partition: offset},
//         timeoutMs?}   without `ends`, each partition is read up to the high watermark that
//                       ListOffsets gave at the start
// output: {records: [{partition, offset, key, value, headers, timestamp}, ...]} in the order
//   kafkajs delivered them (per partition: offset order); key/value base64 or null
'use strict'

const { kafka, b64, emit, headersJson, main } = require('./lib')

main(async input => {
  const client = kafka(input, 'kafkajs-consume')
  let ends = input.ends
  if (!ends) {
    const admin = client.admin()
    await admin.connect()
    ends = {}
    for (const p of await admin.fetchTopicOffsets(input.topic)) ends[p.partition] = Number(p.high)
    await admin.disconnect()
  }
  const pending = new Set(
    Object.entries(ends)
      .filter(([, end]) => end > 0)
      .map(([p]) => Number(p))
  )
  const records = []
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
        if (Number(m.offset) + 1 >= ends[batch.partition]) pending.delete(batch.partition)
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
