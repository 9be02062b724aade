using Potluck.Node.Cli;
using Potluck.Node.Compute;
using Potluck.Node.Hosting;
using Potluck.Scheduler.Providing;
using Potluck.Scheduler.Sandbox;

namespace Potluck.Node.Tests.Cli;

/// <summary>
/// The sandbox's instance pool (<c>compute:sandbox:instanceSlots</c>): a documented default, range-checked at start with a
/// message naming the key, bound from the configuration file, and raised by a node to its provider's cores plus four.
/// </summary>
public class SandboxPoolOptionsTests
{
    private static IReadOnlyList<string> Problems(int slots)
    {
        var compute = new ComputeOptions();
        return PotluckOptionsValidator.Validate(new PotluckOptions { Compute = compute with { Sandbox = compute.Sandbox with { InstanceSlots = slots } } });
    }

    [Test]
    public void Default_IsSixteenOrTwiceTheProcessors_AndValid()
    {
        Assert.That(new SandboxOptions().InstanceSlots, Is.EqualTo(Math.Max(16, 2 * Environment.ProcessorCount)));
        Assert.That(Problems(new SandboxOptions().InstanceSlots), Is.Empty);
        Assert.That(Problems(0), Is.Empty, "0 turns the pool off");
    }

    [TestCase(-1, "'compute:sandbox:instanceSlots' is -1; it must be 0 (no pool: each run's memory mapped as it goes) to 1024")]
    [TestCase(1025, "'compute:sandbox:instanceSlots' is 1025; it must be 0")]
    public void OutOfRange_IsRefusedWithItsKey(int slots, string expected) =>
        Assert.That(Problems(slots), Has.Some.StartsWith(expected));

    [Test]
    public void ANode_HasASlotForEveryCoreItProvides_PlusFourForItsOwnChecks()
    {
        var dir = Path.GetTempPath();
        ComputeOptions With(int cores, int slots) => new() { Provider = new ProviderOptions { Cores = cores }, Sandbox = new SandboxOptions { InstanceSlots = slots } };

        Assert.That(ComputeNode.SandboxOptionsFor(With(cores: 40, slots: 16), dir).InstanceSlots, Is.EqualTo(44));
        Assert.That(ComputeNode.SandboxOptionsFor(With(cores: 2, slots: 16), dir).InstanceSlots, Is.EqualTo(16));
        Assert.That(ComputeNode.SandboxOptionsFor(With(cores: 40, slots: 0), dir).InstanceSlots, Is.Zero, "off stays off");
        Assert.That(ComputeNode.SandboxOptionsFor(With(cores: 5000, slots: 16), dir).InstanceSlots, Is.EqualTo(SandboxOptions.MaxInstanceSlots));
    }

    [Test]
    public void TheKey_BindsFromTheConfigurationFile()
    {
        var dir = Directory.CreateTempSubdirectory("potluck-cli-").FullName;
        try
        {
            File.WriteAllText(Path.Combine(dir, NodeConfiguration.FileName), "{\"compute\": {\"sandbox\": {\"instanceSlots\": 0}}}");
            var options = RunCommand.ResolveRunOptions(Commands.Parse(["run", "--data-dir", dir]));
            Assert.That(options.Compute.Sandbox.InstanceSlots, Is.Zero);
        }
        finally
        {
            Directory.Delete(dir, recursive: true);
        }
    }
}
