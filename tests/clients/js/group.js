// One kafkajs consumer-group member, driven over stdin/stdout by test_kafkajs.py.
//
// input (argv[2]): {brokers, topic, groupId, clientId, sessionTimeout, heartbeatInterval,
//                   rebalanceTimeout}
// stdout, one JSON object a line:
//   {event: "joined", memberId, isLeader, assignment: [partitions]}  after each join
//   {event: "record", partition, offset, key, value}   after its offset (+1) was committed
//   {event: "stopped"}   after disconnect() (LeaveGroup) returned, just before exiting
// stdin: a line "stop" (or end of input) disconnects and exits.
//
// Offsets are committed one record at a time *before* the record is reported, so a record
// whose commit fails (a rebalance took its partition) is not reported and will be consumed by
// the partition's next owner: with clean leaves, every record is reported exactly once.
'use strict'

const readline = require('readline')
const { kafka, b64, emit, main } = require('./lib')

main(async input => {
  const consumer = kafka(input, input.clientId).consumer({
    groupId: input.groupId,
    sessionTimeout: input.sessionTimeout ?? 6000,
    rebalanceTimeout: input.rebalanceTimeout ?? 10000,
    heartbeatInterval: input.heartbeatInterval ?? 500,
    maxWaitTimeInMs: 100,
  })
  consumer.on(consumer.events.GROUP_JOIN, ({ payload }) => {
    emit({
      event: 'joined',
      memberId: payload.memberId,
      isLeader: payload.isLeader,
      assignment: (payload.memberAssignment[input.topic] || []).slice().sort((a, b) => a - b),
    })
  })
  consumer.on(consumer.events.CRASH, ({ payload }) => {
    emit({ event: 'crash', error: String(payload.error), restart: payload.restart })
  })
  await consumer.connect()
  await consumer.subscribe({ topic: input.topic, fromBeginning: true })
  await consumer.run({
    autoCommit: false,
    eachMessage: async ({ topic, partition, message }) => {
      const next = (BigInt(message.offset) + 1n).toString()
      await consumer.commitOffsets([{ topic, partition, offset: next }])
      emit({
        event: 'record',
        partition,
        offset: Number(message.offset),
        key: b64(message.key),
        value: b64(message.value),
      })
    },
  })
  await new Promise(resolve => {
    const rl = readline.createInterface({ input: process.stdin })
    rl.on('line', line => line.trim() === 'stop' && resolve())
    rl.on('close', resolve)
  })
  await consumer.disconnect()
  emit({ event: 'stopped' })
})
