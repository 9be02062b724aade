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
    /// <summary>Flips the last byte of the module's first custom section: another module of the same length, the same program.</summary>
    private static void RewriteACustomSection(byte[] wasm)
    {
        static (int Value, int Next) Leb(byte[] b, int i)
        {
            int value = 0, shift = 0;
            while (true)
            {
                var x = b[i++];
                value |= (x & 0x7F) << shift;
                shift += 7;
                if (x < 0x80)
                {
                    return (value, i);
                }
            }
        }
        for (var i = 8; i < wasm.Length;)
        {
            var (size, payload) = Leb(wasm, i + 1);
            if (wasm[i] == 0)
            {
                wasm[payload + size - 1] ^= 0x01;
                return;
            }
            i = payload + size;
        }
        Assert.Fail("the sample has no custom section");
    }

    [Test]
    public void TheSameModuleTaskAfterTask_IsHashedOnce_AndARewrittenBuffer_IsLeasedAsWhatItHoldsNow() => VirtualTimeDriver.Run(async d =>
    {
        var ct = CancellationToken.None;
        await using var cluster = new TrustCluster(d, seed: 337);
        var provider = await cluster.AddAsync("provider", provide: true, price: 10,
            configure: c => c with { Provider = c.Provider with { Cores = 2, StrangerCoreShare = 1 } });
        var requester = await cluster.AddAsync("requester", provide: false);
        await requester.Client.WaitForProvidersAsync(1, ct);

        var buffer = ComputeCluster.Sample("hashchain").ToArray();
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
        RewriteACustomSection(buffer);
        var after = SHA256.HashData(buffer);
        Assert.That(provider.Node.Modules.Contains(after), Is.False);
        await Run("rewritten buffer");
        Assert.That(requester.Client.ModulesHashed, Is.EqualTo(2), "the rewritten buffer is another module: hashed");
        Assert.That(provider.Node.Modules.Contains(after), Is.True,
            "the lease named the module the buffer now holds, so the provider asked for it and stored it by that hash");
        Assert.That(provider.Node.Modules.Contains(before), Is.True);
    });
}
