using System.Security.Cryptography;
using Potluck.Node.Cli;
using Potluck.Node.Hosting;
using Potluck.Protocol.Identity;
using Potluck.Scheduler.Accounting;
using Potluck.Scheduler.Credits;

namespace Potluck.Node.Tests.Cli;

/// <summary>`potluck ledger --verify` on a node's data directory: the chain audit, with its verdict as the exit code.</summary>
public class LedgerVerifyTests
{
    private string _dir = "";

    [SetUp]
    public void SetUp() => _dir = Path.Combine(Path.GetTempPath(), "potluck-verify-" + Guid.NewGuid().ToString("N"));

    [TearDown]
    public void TearDown()
    {
        if (Directory.Exists(_dir))
        {
            Directory.Delete(_dir, recursive: true);
        }
    }

    private static async Task<(int Code, string Out, string Err)> Run(params string[] args)
    {
        var stdout = new StringWriter();
        var stderr = new StringWriter();
        var code = await Commands.RunAsync(args, stdout, stderr);
        return (code, stdout.ToString(), stderr.ToString());
    }

    /// <summary>A paid receipt in the ledger of <paramref name="owner"/>, its proposal in the chain, and the provider's agreement held.</summary>
    private static void Pay(CreditLedger ledger, PrivateKey owner, PrivateKey provider, int n, bool recordEntry = true)
    {
        var lease = SHA256.HashData(BitConverter.GetBytes(n))[..8];
        var receipt = SignedReceipt.Create(new Receipt
        {
            ReceiptId = Receipt.ComputeId(lease, provider.PeerId, owner.PeerId),
            LeaseId = lease,
            Requester = owner.PeerId.ToBytes(),
            Provider = provider.PeerId.ToBytes(),
            FuelUsed = 1_000_000,
            PricePerMillionFuel = 10,
            Amount = 10,
            AttestationHash = new byte[Attestation.HashLength],
        }, owner);
        if (recordEntry)
        {
            Assert.That(ledger.Record(receipt, LedgerEntryKind.Spent), Is.EqualTo(LedgerResult.Recorded));
        }
        var (proposal, _) = ledger.AppendOwnBlock(receipt.Receipt.ReceiptId, (seq, previous) => SignedBlock.Sign(new ChainBlock
        {
            Author = owner.PeerId.ToBytes(), Seq = seq, Previous = previous, Counterparty = provider.PeerId.ToBytes(),
            ReceiptId = receipt.Receipt.ReceiptId, LeaseId = lease, Amount = 10, FuelUsed = 1_000_000,
        }, owner));
        var agreement = SignedBlock.Sign(new ChainBlock
        {
            Author = provider.PeerId.ToBytes(), Seq = (ulong)n, Previous = n == 1 ? SignedBlock.Genesis : SHA256.HashData(BitConverter.GetBytes(n)),
            Counterparty = owner.PeerId.ToBytes(), LinkSeq = proposal.Seq, LinkHash = proposal.Hash, Kind = BlockKind.Agreement,
            ReceiptId = receipt.Receipt.ReceiptId, LeaseId = lease, Amount = 10, FuelUsed = 1_000_000,
        }, provider);
        ledger.StoreForeignBlock(agreement, keep: true, out _);
    }

    [Test]
    public async Task Verify_ASoundChain_SaysSound_ExitsZero()
    {
        var owner = PrivateKey.LoadOrCreate(Path.Combine(Directory.CreateDirectory(_dir).FullName, NodeConfiguration.IdentityFileName));
        var provider = PrivateKey.FromRandom(new Random(7));
        using (var ledger = CreditLedger.Open(_dir, owner.PeerId, new CreditsOptions(), TimeProvider.System))
        {
            for (var i = 1; i <= 3; i++)
            {
                Pay(ledger, owner, provider, i);
            }
        }

        var (code, output, err) = await Run("ledger", "--verify", "--data-dir", _dir);

        Assert.That(code, Is.EqualTo(0), err);
        Assert.That(output, Does.Contain("3 blocks (3 payments made, 0 received)").And.Contain("3 counterparty half-blocks").And.Contain("Verdict:   sound"));
    }

    [Test]
    public async Task Verify_APaymentTheLedgerDoesNotRecord_SaysNotSound_ExitsOne()
    {
        var owner = PrivateKey.LoadOrCreate(Path.Combine(Directory.CreateDirectory(_dir).FullName, NodeConfiguration.IdentityFileName));
        var provider = PrivateKey.FromRandom(new Random(8));
        using (var ledger = CreditLedger.Open(_dir, owner.PeerId, new CreditsOptions(), TimeProvider.System))
        {
            Pay(ledger, owner, provider, 1);
            Pay(ledger, owner, provider, 2, recordEntry: false);
        }

        var (code, output, _) = await Run("ledger", "--verify", "--data-dir", _dir, "--json");

        Assert.That(code, Is.EqualTo(1));
        Assert.That(output, Does.Contain("\"sound\": false").And.Contain("block 2: no Spent entry for its receipt"));
    }
}
