namespace Potluck.Node.Tests;

/// <summary>
/// A node under an address-space limit (<c>ulimit -v</c>): Wasmtime aborts the whole process when it cannot reserve its
/// instance pool, so the sandbox pools only what fits and says so — the node starts and provides either way.
/// </summary>
public class SandboxPoolProcessTests
{
    [Test]
    public async Task UnderAnAddressSpaceLimit_TheNodeStartsWithoutThePool_InsteadOfAborting()
    {
        using var cts = new CancellationTokenSource(TimeSpan.FromMinutes(3));
        var dir = Directory.CreateTempSubdirectory("potluck-ulimit-").FullName;
        try
        {
            // 40 GB: room for the runtime, none for a pool of ~4.5 GiB slots (the pool would need over 70 GB).
            await using var node = PotluckProcess.StartUnderAddressLimit(40_000_000,
                "run", "--listen", "/ip4/127.0.0.1/tcp/0", "--no-mdns", "--data-dir", dir);
            await node.WaitForLineAsync(l => l.StartsWith("Providing:", StringComparison.Ordinal), cts.Token);

            Assert.That(node.Transcript, Does.Contain("slots asked, 0 fit this process's address space"));
            Assert.That(await node.StopAsync(cts.Token), Is.EqualTo(0), node.Transcript);
        }
        finally
        {
            Directory.Delete(dir, recursive: true);
        }
    }
}
