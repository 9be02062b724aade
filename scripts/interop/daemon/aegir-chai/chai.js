// aegir/chai as @libp2p/interop uses it, set up as aegir sets it up: chai 4 with chai-as-promised (eventually),
// chai-parentheses (exist(), ok()) and chai-bites (equalBytes). Resolved from the runner's node_modules.
import chai from 'chai'
import chaiAsPromised from 'chai-as-promised'
import chaiBites from 'chai-bites'
import chaiParentheses from 'chai-parentheses'

chai.use(chaiAsPromised)
chai.use(chaiParentheses)
chai.use(chaiBites)

export const expect = chai.expect
export const assert = chai.assert
export { chai }
