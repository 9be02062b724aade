using Microsoft.Extensions.Time.Testing;
using Potluck.Protocol.Identity;
using Potluck.Scheduler.Accounting;
using Potluck.Scheduler.Credits;
using static Potluck.Scheduler.Tests.Ledger.CreditsFixtures;

namespace Potluck.Scheduler.Tests.Accounting;

/// <summary>
/// The provider's side of a stream of proposals in one transaction: each proposal stored with this node's agreement to it
/// (<see cref="CreditLedger.StoreAndAgree"/>), and the requester's agreements stored together (<see cref="CreditLedger.StoreForeignBlocks"/>).
/// </summary>
public class ChainStoreAndAgreeTests
{
    private static readonly ChainOptions Chain = new();

    [Test]
    public void StoreAndAgree_StoresEachProposalWithItsAgreement_Durably_AndAForkedOneGetsNone()
    {
        var dir = Path.Combine(Path.GetTempPath(), "potluck-chain-tests", Guid.NewGuid().ToString("N"));
        try
        {
            var receipts = Enumerable.Range(1, 4).Select(i => MakeReceipt(Lease(i), Requester, Provider)).ToArray();
            var proposals = new List<SignedBlock>();
            var previous = SignedBlock.Genesis;
            for (var i = 0; i < 3; i++)
            {
                var p = ChainBlockTests.Proposal(receipts[i], Requester, (ulong)i + 1, previous);
                proposals.Add(p);
                previous = p.Hash;
            }
            // Another block of the requester at seq 2, for another payment: a fork of proposals[1].
            var fork = ChainBlockTests.Proposal(receipts[3], Requester, 2, proposals[0].Hash);
            Func<ulong, byte[], SignedBlock> Agree(SignedBlock p) => (seq, prev) => ChainBlockTests.Agreement(p, Provider, seq, prev);

            byte[][] agreed;
            using (var ledger = CreditLedger.Open(dir, Provider.PeerId, Options, new FakeTimeProvider(Epoch)))
            {
                Assert.That(ledger.StoreForeignBlock(proposals[1], keep: false, out _), Is.EqualTo(ForeignBlockResult.Stored), "heard by gossip before");

                var results = ledger.StoreAndAgree([(proposals[0], Agree(proposals[0])), (fork, Agree(fork)), (proposals[1], Agree(proposals[1])), (proposals[2], Agree(proposals[2]))]);

                Assert.That(results[1].Agreement, Is.Null, "the fork gets no agreement");
                Assert.That(results[1].Conflicting, Is.EqualTo(proposals[1].EnvelopeBytes), "but the block it conflicts with: a fork proof");
                foreach (var k in new[] { 0, 2, 3 })
                {
                    Assert.That(results[k].Conflicting, Is.Null);
                    Assert.That(proposals[k == 0 ? 0 : k - 1].LinkedBy(results[k].Agreement!), Is.EqualTo(BlockStatus.Valid));
                }
                Assert.That(results.Where(r => r.Agreement is not null).Select(r => r.Agreement!.Seq), Is.EqualTo(new ulong[] { 1, 2, 3 }), "in order, no gap");
                Assert.That(ledger.OwnBlockFor(receipts[3].Receipt.ReceiptId), Is.Null, "nothing written for the fork");

                var again = ledger.StoreAndAgree([(proposals[0], (_, _) => throw new AssertionException("an agreement held is not signed again"))]);
                Assert.That(again[0].Agreement!.EnvelopeBytes, Is.EqualTo(results[0].Agreement!.EnvelopeBytes));
                agreed = [.. results.Where(r => r.Agreement is not null).Select(r => r.Agreement!.EnvelopeBytes)];
            }
            using var reopened = CreditLedger.Open(dir, Provider.PeerId, Options, new FakeTimeProvider(Epoch));
            Assert.That(reopened.OwnBlocks(0, 10), Is.EqualTo(agreed), "the agreements are committed and durable");
            for (var i = 0; i < 3; i++)
            {
                Assert.That(reopened.ChainBlockAt(Requester.PeerId, (ulong)i + 1), Is.EqualTo(proposals[i].EnvelopeBytes), "each proposal stored with its agreement");
            }
        }
        finally
        {
            Directory.Delete(dir, recursive: true);
        }
    }

    [Test]
    public void StoreForeignBlocks_StoresABatchInOneTransaction_ReportingEachResult()
    {
        using var ledger = CreditLedger.Open("", Requester.PeerId, Options, new FakeTimeProvider(Epoch), inMemory: true);
        var a = ChainBlockTests.Proposal(MakeReceipt(Lease(1), Stranger, Provider), Stranger, 1, SignedBlock.Genesis);
        var b = ChainBlockTests.Proposal(MakeReceipt(Lease(2), Stranger, Provider), Stranger, 1, SignedBlock.Genesis);
        var c = ChainBlockTests.Proposal(MakeReceipt(Lease(3), Stranger, Provider), Stranger, 2, a.Hash);

        var results = ledger.StoreForeignBlocks([a, a, b, c], keep: true);

        Assert.That(results.Select(r => r.Result), Is.EqualTo(new[] { ForeignBlockResult.Stored, ForeignBlockResult.AlreadyHeld, ForeignBlockResult.Conflict, ForeignBlockResult.Stored }));
        Assert.That(results[2].Conflicting, Is.EqualTo(a.EnvelopeBytes));
        Assert.That(ledger.ChainBlockAt(Stranger.PeerId, 2), Is.EqualTo(c.EnvelopeBytes));
        Assert.That(ledger.StoreForeignBlocks([], keep: true), Is.Empty);
    }
}
