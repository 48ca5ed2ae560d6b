// Produces with a kafkajs producer and prints what the broker acknowledged.
//
// input: {brokers, producer: {idempotent, transactionalId, maxInFlightRequests, ...},
//         steps: [step, ...]} with steps
//   {send: {topic, acks, compression, timeout, messages: [{key, value, headers, partition,
//           timestamp}]}}   key/value base64 or null, headers [[name, base64], ...]
//   {begin: {}}  {commit: {}}  {abort: {}}   a transaction (sends in between go through it)
//   {sendOffsets: {consumerGroupId, topics: [{topic, partitions: [{partition, offset}]}]}}
//                group offsets committed with the open transaction
// output: {steps: [result, ...]}; a send's result is {records: kafkajs' RecordMetadata[],
//   offsets: [offset of each message] (when every message names its partition: the
//   partition's baseOffset plus the message's place among that partition's messages)};
//   a failed step gives {error: {...}} and ends the run.
'use strict'

const { Partitioners } = require('kafkajs')
const { COMPRESSION, kafka, unb64, emit, errorJson, headersObj, main } = require('./lib')

main(async input => {
  const producer = kafka(input, 'kafkajs-produce').producer({
    createPartitioner: Partitioners.DefaultPartitioner, // Java's murmur2 partitioner
    allowAutoTopicCreation: false,
    ...(input.producer || {}),
  })
  await producer.connect()
  const results = []
  let txn = null
  try {
    for (const step of input.steps) {
      try {
        results.push(await run(step))
      } catch (e) {
        results.push({ error: errorJson(e) })
        process.stderr.write(`${e.stack}\n`)
        break
      }
    }
  } finally {
    emit({ steps: results })
    await producer.disconnect()
  }

  async function run(step) {
    if (step.begin) {
      txn = await producer.transaction()
      return {}
    }
    if (step.sendOffsets) {
      await txn.sendOffsets(step.sendOffsets)
      return {}
    }
    if (step.commit || step.abort) {
      const t = txn
      txn = null
      await (step.commit ? t.commit() : t.abort())
      return {}
    }
    const s = step.send
    const messages = s.messages.map(m => ({
      key: unb64(m.key),
      value: unb64(m.value),
      headers: headersObj(m.headers),
      ...(m.partition !== undefined && m.partition !== null ? { partition: m.partition } : {}),
      ...(m.timestamp !== undefined ? { timestamp: String(m.timestamp) } : {}),
    }))
    const records = await (txn || producer).send({
      topic: s.topic,
      acks: s.acks ?? -1,
      timeout: s.timeout ?? 10000,
      compression: COMPRESSION[s.compression || 'none'],
      messages,
    })
    let offsets = null
    if (messages.every(m => m.partition !== undefined)) {
      const base = {}
      for (const r of records) base[r.partition] = Number(r.baseOffset)
      const seen = {}
      offsets = messages.map(m => {
        const i = seen[m.partition] || 0
        seen[m.partition] = i + 1
        const b = base[m.partition]
        return b === undefined || b < 0 ? null : b + i
      })
    }
    return { records, offsets }
  }
})
