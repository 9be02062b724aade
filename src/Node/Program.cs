using Potluck.Node.Cli;

namespace Potluck.Node;

public static class Program
{
    public static Task<int> Main(string[] args) =>
        SimGcSettings.RunAgainIfNeeded(args) is { } exitCode
            ? Task.FromResult(exitCode)
            : Commands.RunAsync(args, Console.Out, Console.Error);
}
