// Reads a JSON list of simulations on stdin, prints each one's decision as a JSON list.
// Each simulation: {identityPolicies: [{name, policy}], principal, action, resource, accountId, context}.
import { runSimulation } from '@cloud-copilot/iam-simulate'

const chunks = []
for await (const chunk of process.stdin) chunks.push(chunk)
const answers = []
for (const s of JSON.parse(Buffer.concat(chunks).toString())) {
  const response = await runSimulation({
    identityPolicies: s.identityPolicies,
    serviceControlPolicies: [],
    resourceControlPolicies: [],
    request: {
      principal: s.principal,
      action: s.action,
      resource: { resource: s.resource, accountId: s.accountId },
      contextVariables: s.context || {}
    }
  }, {})
  answers.push(response.resultType === 'error' ? { error: response.errors } : { decision: response.overallResult })
}
process.stdout.write(JSON.stringify(answers))
