using System.Security.Cryptography;
using System.Text;
using Potluck.Node.Tests.Adversarial;
using Potluck.Protocol.Runtime;
using Potluck.Scheduler.Execution;
using Potluck.Scheduler.Leasing;

namespace Potluck.Node.Tests.Compute;

/// <summary>
/// A requester hashes a module it submits again only once (each lease hashed its whole module), and a buffer the caller
/// rewrites with another module between submissions is leased as the module it now holds, never under the hash remembered.
/// </summary>
public class ModuleDigestNodeTests
{
    /// <summary>The module with a custom section appended (as ModuleCacheTests does): the same program, another module per fill.</summary>
    private static byte[] WithCustomSection(byte[] wasm, byte fill) => [.. wasm, 0, 6, 1, (byte)'x', fill, fill, fill, fill];

    [Test]
    public void TheSameModuleTaskAfterTask_IsHashedOnce_AndARewrittenBuffer_IsLeasedAsWhatItHoldsNow() => VirtualTimeDriver.Run(async d =>
    {
        var ct = CancellationToken.None;
        await using var cluster = new TrustCluster(d, seed: 337);
        var (provider, requester) = await cluster.ProviderAndRequesterAsync(cores: 2);

        var hashchain = ComputeCluster.Sample("hashchain");
        var buffer = WithCustomSection(hashchain, 1);
        async Task Run(string seed)
        {
            var result = await requester.Node.SubmitAsync(OutcomeAttackTests.HashTask(seed, 10) with { Module = buffer }, ct);
            Assert.That(result.Status, Is.EqualTo(ExecutionStatus.Success), result.Error);
            Assert.That(Encoding.ASCII.GetString(result.Output.Span), Is.EqualTo(ComputeCluster.HashChain(Encoding.UTF8.GetBytes(seed), 10)));
        }
        for (var i = 0; i < 3; i++)
        {
            await Run($"same module {i}");
        }
        Assert.That(requester.Client.ModulesHashed, Is.EqualTo(1), "three leases of one module: hashed for the first only");

        var before = SHA256.HashData(buffer);
        WithCustomSection(hashchain, 2).CopyTo(buffer, 0); // the caller reuses its buffer for another module of the same length
        var after = SHA256.HashData(buffer);
        Assert.That(provider.Node.Modules.Contains(after), Is.False);
        await Run("rewritten buffer");
        Assert.That(requester.Client.ModulesHashed, Is.EqualTo(2), "the rewritten buffer is another module: hashed");
        Assert.That(provider.Node.Modules.Contains(after), Is.True,
            "the lease named the module the buffer now holds, so the provider asked for it and stored it by that hash");
        Assert.That(provider.Node.Modules.Contains(before), Is.True);
    });
}
