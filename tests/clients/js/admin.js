// Calls kafkajs admin methods in order and prints each one's result.
//
// input: {brokers, calls: [{method, args: [...]}, ...]}   e.g. {method: "createTopics",
//        args: [{topics: [{topic, numPartitions, configEntries}]}]}
// output: {results: [{ok: what the method resolved to} | {error: {name, type, code, message}}]}
//   every call runs, a failed one does not stop the next
'use strict'

const { kafka, emit, errorJson, main } = require('./lib')

main(async input => {
  const admin = kafka(input, 'kafkajs-admin').admin()
  await admin.connect()
  const results = []
  try {
    for (const call of input.calls) {
      try {
        const ok = await admin[call.method](...(call.args || []))
        results.push({ ok: ok === undefined ? null : ok })
      } catch (e) {
        process.stderr.write(`${call.method}: ${e.stack}\n`)
        const error = errorJson(e)
        // createTopics / deleteTopics / createPartitions: the per-topic errors
        if (e.errors) error.errors = e.errors.map(errorJson)
        if (e.topics) error.topics = e.topics
        results.push({ error })
      }
    }
  } finally {
    emit({ results })
    await admin.disconnect()
  }
})
